//! Settings: command line and configuration file.
