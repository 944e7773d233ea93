"""Everything that trains or judges a model, TensorFlow inside.

``retrain/`` trains, searches, judges and deploys a challenger; ``monitor/`` measures the users'
labels (errors, drift, the retrain decision, the history of versions); ``loop/`` runs the cycle
(one at a time, triggered, scheduled, recorded). :mod:`.data` loads MNIST, :mod:`.tracking`
records into MLflow. The subpackages export nothing here: the notebooks import the modules they
use, and importing a light module (the trigger, the lock) never loads TensorFlow.
"""
