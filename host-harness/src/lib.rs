//! The dualform host harness (placeholder; see the harness issue).
