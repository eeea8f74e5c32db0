//! The host side of `osbuild:stage/context`: the build's facts a stage may
//! use, for stages that have no WASI clock to read the source epoch from.

use super::bindings::osbuild::stage::context as wit;

pub struct Context {
    pub source_epoch: i64,
}

impl wit::Host for Context {
    fn source_epoch(&mut self) -> i64 {
        self.source_epoch
    }
}
