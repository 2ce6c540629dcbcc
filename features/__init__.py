"""Data side of decayrec: the data contract, source adapters, validation, splits and
(later) the decay maths and the Feast feature repository."""
