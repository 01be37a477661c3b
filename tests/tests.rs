//! One test binary (libtorch links once). Each module is a topic:

/// Every golden outcome recorded on real PyTorch replays identically.
mod golden;
