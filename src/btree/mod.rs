//! btree (to be written)
