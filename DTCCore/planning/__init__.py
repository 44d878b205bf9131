"""Planning: the grid, network shape and extent a model works on. Torch-free (the Slicer panel plans with it)."""
