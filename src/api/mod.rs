//! Custom resource types of the `dataguardian.io/v1alpha1` API, one file per kind.
