//! Real services for tests, started on loopback ports in temp dirs and stopped on drop.
