"""Hardware: MAC counting, export (ONNX, OpenVINO IR) with parity checks, runtimes, latency measurement and
prediction, int8, remote devices and the target definitions."""
