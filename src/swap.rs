//! A value many readers share and one writer replaces whole: the public URL a tunnel reconnects
//! with, the greeting a settings change re-renders. Readers get a clone of the current value (for
//! the big ones, an `Arc`), never a lock held across an await.

use std::sync::{Arc, PoisonError, RwLock};

/// Cheap to clone: every clone sees the same value.
#[derive(Debug, Default)]
pub struct Swap<T>(Arc<RwLock<T>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Clone> Swap<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    pub fn get(&self) -> T {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_value_set_last() {
        let a = Swap::new(1);
        let b = a.clone();
        b.set(2);
        assert_eq!(a.get(), 2);
    }
}
