//! `io.weldr.users` (work in progress).
