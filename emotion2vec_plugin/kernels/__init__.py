"""CPU speed plumbing, apart from the model math in ``modules/``: kernels that compute exactly what
a torch call computes, faster (C source compiled at first use, loaded with ctypes, checked against
torch before use, with a fallback to torch)."""
