"""Media engine: Python orchestration over the compiled kernels in cext/."""
