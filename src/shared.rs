//! [`Shared`]: a setting a reload may replace while every part of the
//! server keeps a handle on it.

/// A setting a reload may replace while every part of the server keeps a
/// handle on it.
#[derive(Debug, Default)]
pub struct Shared<T>(std::sync::Arc<std::sync::RwLock<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: Clone> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(std::sync::Arc::new(std::sync::RwLock::new(value)))
    }

    /// The value in force now.
    #[must_use]
    pub fn get(&self) -> T {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, value: T) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }
}
