//! Synthetic nsys exports: the schema nsys 2025.3 writes, with distributions fitted to a real capture.
