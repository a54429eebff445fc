"""Target-free Relax passes and the graph helpers they share: what every compile pipeline may run
before it chooses kernels for a target (``qbuild.kernels``), and what the quantizer reads its
graph with (``qbuild.quantize``). One pass to a module:

- ``fold_pads``: zero pads folded into the convs that read them.
- ``dense_as_conv``: matmuls with constant weights as one-pixel convs.
- ``clip``: clip as minimum/maximum.
- ``squeeze``: squeeze axes counted from the front.
- ``narrow``: integer rescaling in int32 where the value ranges (``ranges``) prove it fits.
- ``integer_rewrites``: the graph rewrites every builtin pipeline starts with.
- ``fusion``: widening casts fused into the kernels that read them.
- ``fold_constants``: calls on constants evaluated at compile time in one build.

``graph`` holds the helpers over a function's bindings; ``rewrite_calls`` makes a pass from a
rewrite of one op's calls.
"""
