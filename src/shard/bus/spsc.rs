//! Bounded single-producer single-consumer ring.
