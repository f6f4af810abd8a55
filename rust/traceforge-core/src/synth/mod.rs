//! Synthetic nsys exports (see synth/mod.rs).
