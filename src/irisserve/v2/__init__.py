"""The Open Inference Protocol (KServe V2 / Triton / MLServer REST): its objects and its tensor codec."""
