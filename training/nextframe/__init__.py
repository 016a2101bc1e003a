"""Next-frame prediction of physics videos: simulators, the frame model, probes."""
