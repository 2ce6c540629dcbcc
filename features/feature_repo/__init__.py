"""decayrec's Feast feature repository."""
