//! Hashed timer wheel.
