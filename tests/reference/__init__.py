"""Reference implementations used as test oracles (and by the benchmarks).

Nothing in the package imports these: the package's own fast paths are tested
bit for bit against them.
"""
