//! Timing wheel (being written).
