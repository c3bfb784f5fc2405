//! Scratch buffers kept by each thread from one op call to the next.
//!
//! The convolutions lay out megabytes of columns or transformed tiles per group of images; fresh
//! buffers cost a zero fill (and, for the heap's new pages, the kernel's) every time, about 8 % of
//! a ResNet-18 step at 224 px, although every element is written before it is read.

use std::cell::RefCell;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `N` of this thread's buffers (of any length and contents), returned to the pool
/// afterwards. Calls may nest (a thread waiting in a parallel loop runs other work): a nested
/// call gets other buffers.
pub(super) fn with<const N: usize, R>(f: impl FnOnce(&mut [Vec<f32>; N]) -> R) -> R {
    let mut buffers: [Vec<f32>; N] =
        POOL.with(|p| std::array::from_fn(|_| p.borrow_mut().pop().unwrap_or_default()));
    let result = f(&mut buffers);
    POOL.with(|p| p.borrow_mut().extend(buffers));
    result
}

/// The first `len` elements of `buf`, grown (never shrunk, so never filled twice) to hold them;
/// their contents are whatever was there.
pub(super) fn prefix(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_are_reused_and_nested_calls_get_their_own() {
        let first = super::with(|[a]: &mut [Vec<f32>; 1]| {
            super::prefix(a, 100).fill(1.0);
            super::with(|[b]: &mut [Vec<f32>; 1]| {
                assert!(b.is_empty(), "a nested call got the outer buffer");
                super::prefix(b, 10).fill(2.0);
            });
            a.as_ptr() as usize
        });
        // The next call gets a buffer back, without a new allocation or fill.
        super::with(|[a, b]: &mut [Vec<f32>; 2]| {
            let ptrs = [a.as_ptr() as usize, b.as_ptr() as usize];
            assert!(ptrs.contains(&first));
            let long = if a.len() == 100 { a } else { b };
            assert_eq!(super::prefix(long, 50), &[1.0; 50][..]);
        });
    }
}
