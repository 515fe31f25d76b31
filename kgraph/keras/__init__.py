"""kgraph for Keras 2.3.1 users: the compatibility patches Keras needs on today's Python and
h5py (``compat``, applied when Keras loads ``kgraph.backend``).

Nothing here imports Keras until a function that needs it is called.
"""
