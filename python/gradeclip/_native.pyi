"""Type stubs for the compiled extension ``gradeclip._native`` (built from ``rust/``)."""

def build_info() -> dict[str, object]:
    """Crate version, whether the build is abi3, debug assertions on/off, worker threads."""
