//! Crash safety: SIGKILL of an identity replica in the middle of writes
//! leaves consistent state. (Being written.)
