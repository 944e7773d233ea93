"""A retraining: the data set (:mod:`.labels`), the network (:mod:`.network`), the search (:mod:`.search`,
with its distributed workers), the judging (:mod:`.crossfit`, :mod:`.promotion`) and the one path a new
model version is published by (:mod:`.deployment`); :mod:`.training` trains the first model."""
