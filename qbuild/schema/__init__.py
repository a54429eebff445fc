"""The results schema: what the engine's output files hold, and how readers read them.

Everything that reads qbuild's output (``qbuild summary``, the report) reads it through this
package, and the engine writes what it describes. It imports only the standard library and
``qbuild.errors``: no engine module, no TVM, no torch. Its modules:

- ``kinds``: the schema id (with its version) of every kind of file;
- ``results``: one experiment's results file, validated, and every one under a root;
- ``documents``: the side-by-side documents (``qbuild compare``, ``qbuild subbyte-kernels``);
- ``tuning``: the tuning databases (``qbuild tune``), as far as a reader needs them;
- ``variants``, ``quantization``, ``layers``: the descriptive fields a reader judges by (a
  variant's precision, the qconfig defaults, a layer in words, the layer-error floor), as each
  file records them, with the values that files written before they were recorded imply.
"""
