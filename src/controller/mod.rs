//! The reconcilers, one per kind; pure planning functions are kept apart from API calls.
