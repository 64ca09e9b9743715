//! What a packet does: connect, publish routing, subscribe, retained.
