//! Secrets never leak into logs, error bodies or metrics. (Being written.)
