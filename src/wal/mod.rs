//! wal (to be written)
