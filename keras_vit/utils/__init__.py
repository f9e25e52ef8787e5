"""Small helpers shared by the package: argument checks (`validation`) and
files written atomically (`io`)."""
