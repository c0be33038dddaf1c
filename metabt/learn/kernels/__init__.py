"""NumPy fast paths of the inner loop: fused kernels of metabt's models, the NumPy forward of
CNP and ProtoNet, and batched adaptation over a task axis. Each equals the torch reference in
float64 (tested)."""

__all__: list[str] = []
