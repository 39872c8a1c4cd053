//! Timer driver (being written).
