"""The schema id of every kind of file qbuild writes: ``qbuild.<kind>/<version>``.

A version changes only when a reader of the old one would misread the new one; fields that are
added are optional, and their readers say what a file without them implies.
"""

RESULTS = "qbuild.results/1"  # one experiment: <root>/<machine-id>/<experiment-id>.json
SIDE_BY_SIDE = "qbuild.side-by-side/1"  # qbuild compare: <root>/<machine-id>/side-by-side/<model>.json
SUBBYTE_KERNELS = "qbuild.subbyte-kernels/2"  # qbuild subbyte-kernels: .../side-by-side/subbyte-kernels.json
TUNING = "qbuild.tuning/1"  # qbuild tune: <tuning dir>/<machine-id>.json
