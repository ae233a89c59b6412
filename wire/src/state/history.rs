//! A bounded series of the latest values, for sparklines.

use std::collections::VecDeque;

/// A bounded series of the latest values, oldest first (for sparklines).
#[derive(Clone, Debug, PartialEq)]
pub struct History<T> {
    values: VecDeque<T>,
    cap: usize,
}

impl<T: Clone> History<T> {
    /// An empty history keeping at most `cap` values (at least 1).
    pub fn new(cap: usize) -> Self {
        History { values: VecDeque::with_capacity(cap.clamp(1, 1024)), cap: cap.max(1) }
    }

    /// Appends a value, forgetting the oldest one when full.
    pub fn push(&mut self, v: T) {
        if self.values.len() >= self.cap {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.values.iter()
    }

    /// The values, oldest first, as a vector.
    pub fn to_vec(&self) -> Vec<T> {
        self.values.iter().cloned().collect()
    }

    /// The newest value.
    pub fn latest(&self) -> Option<&T> {
        self.values.back()
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The most values kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}
