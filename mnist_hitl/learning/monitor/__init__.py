"""Watching the users' labels: per-class errors and the decision (:mod:`.monitoring`, :mod:`.decision`),
drift (:mod:`.drift`), and every model version scored over time (:mod:`.history`)."""
