//! The event loop: poll, connections, buffers, timers, the bus.
pub mod bus;
pub mod timer;
