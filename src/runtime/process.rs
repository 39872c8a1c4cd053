//! Process runtime (being written).
