//! Write coalescing for the HTTP listeners: under load, the answers decided in one turn
//! of a worker's event loop are written together at its end.
//!
//! Why: a worker that writes each answer the moment it is decided wakes its peer (Envoy,
//! nginx, a load generator) once per answer. The wake-up of a peer sleeping on another
//! core is paid by the writer, inside `send`: measured at 17 % of tokengate's CPU per
//! uncached check with 32 clients in flight, as much as all of its own code besides the
//! signature. Envoy does the same; its connections write once the dispatcher has run the
//! events of the current turn.
//!
//! When: the first answer of a turn is always written at once, so its peer can send more
//! work while this worker judges the rest. Later answers wait for the end of the turn only
//! when the last turn held more than [`COALESCE_ABOVE`] answers: with few clients in
//! flight, holding answers back would leave this worker idle waiting for their next
//! requests (measured: closed-loop throughput with 4 clients fell by a quarter when every
//! answer after the first waited). An answer waits at most for the checks that were
//! ready in its turn.
//!
//! How: a turn ends when tokio's scheduler next polls for I/O; `yield_now` defers its
//! wake-up to exactly that point.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Most answers of a turn written as each is decided, judged on the last turn.
pub const COALESCE_ABOVE: u32 = 4;

thread_local! {
    /// This worker's turn.
    static TURN: Arc<Turn> = Arc::default();
}

/// Waits, when it pays, until the end of the current turn (see the module documentation).
pub async fn coalesce() {
    // The turn's `Arc` is cloned only when a waker or a waiting answer keeps it.
    let wait = TURN.with(|turn| {
        if turn.answers.fetch_add(1, Ordering::Relaxed) == 0 {
            // The first answer of the turn: have the turn's end counted. The first poll
            // of `yield_now` hands the waker to the scheduler's list of wake-ups deferred
            // to the end of the turn (outside a runtime it wakes at once) and returns
            // Pending; dropping the future keeps the registration.
            let end = Waker::from(turn.clone());
            let _ = pin!(tokio::task::yield_now()).poll(&mut Context::from_waker(&end));
            None
        } else {
            (turn.last_answers.load(Ordering::Relaxed) > COALESCE_ABOVE).then(|| EndOfTurn {
                turn: turn.clone(),
                registered: None,
            })
        }
    });
    if let Some(end) = wait {
        end.await;
    }
}

/// One worker's turn: answers decided in it and in the last one, and the answers waiting
/// for its end, in the order they were decided. Only the worker's own thread touches it
/// (atomics and a mutex because a waker must be `Send + Sync`).
#[derive(Debug, Default)]
struct Turn {
    number: AtomicU64,
    answers: AtomicU32,
    last_answers: AtomicU32,
    waiting: Mutex<Vec<Waker>>,
}

impl Wake for Turn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// The end of the turn: counts it and wakes its waiting answers, first decided first.
    fn wake_by_ref(self: &Arc<Self>) {
        self.number.fetch_add(1, Ordering::Release);
        let n = self.answers.swap(0, Ordering::Relaxed);
        self.last_answers.store(n, Ordering::Relaxed);
        let waiting =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiting {
            w.wake();
        }
    }
}

/// Resolves at the end of the turn it was first polled in. Unlike awaiting `yield_now`
/// itself, it does not resolve when its task is polled again before then (a connection
/// task may be woken early, by one of its timers for instance), which would end
/// `yield_now` at once.
#[derive(Debug)]
struct EndOfTurn {
    turn: Arc<Turn>,
    /// The turn this answer waits for the end of.
    registered: Option<u64>,
}

impl Future for EndOfTurn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = self.turn.number.load(Ordering::Acquire);
        match self.registered {
            Some(turn) if turn != now => Poll::Ready(()),
            Some(_) => Poll::Pending,
            None => {
                self.turn
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(cx.waker().clone());
                self.registered = Some(now);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Runs `n` tasks in one turn; each logs `judge i`, coalesces, then logs `write i`.
    async fn one_turn(n: usize, log: &Rc<RefCell<Vec<String>>>) {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let log = log.clone();
                tokio::task::spawn_local(async move {
                    log.borrow_mut().push(format!("judge {i}"));
                    coalesce().await;
                    log.borrow_mut().push(format!("write {i}"));
                })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                panic!("{e}");
            }
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        }
    }

    fn run(turns: &[usize]) -> Vec<String> {
        let rt = runtime();
        let local = tokio::task::LocalSet::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        local.block_on(&rt, async {
            for &n in turns {
                log.borrow_mut().clear();
                one_turn(n, &log).await;
            }
        });
        log.take()
    }

    #[test]
    fn after_a_busy_turn_answers_but_the_first_wait_for_the_end_of_the_turn() {
        let busy = COALESCE_ABOVE as usize + 2;
        let log = run(&[busy, busy]);
        let mut want = vec!["judge 0".to_string(), "write 0".to_string()];
        want.extend((1..busy).map(|i| format!("judge {i}")));
        want.extend((1..busy).map(|i| format!("write {i}")));
        assert_eq!(log, want);
    }

    #[test]
    fn after_a_quiet_turn_every_answer_is_written_at_once() {
        let quiet = COALESCE_ABOVE as usize;
        let log = run(&[quiet, COALESCE_ABOVE as usize + 2]);
        let want: Vec<String> = (0..COALESCE_ABOVE as usize + 2)
            .flat_map(|i| [format!("judge {i}"), format!("write {i}")])
            .collect();
        assert_eq!(log, want);
    }

    #[test]
    fn the_end_of_the_turn_is_not_ended_by_polling_again() {
        let rt = runtime();
        rt.block_on(async {
            // Open a turn, as the first answer of one does.
            coalesce().await;
            let mut wait = pin!(EndOfTurn {
                turn: TURN.with(Arc::clone),
                registered: None,
            });
            std::future::poll_fn(|cx| {
                assert!(wait.as_mut().poll(cx).is_pending());
                assert!(wait.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            wait.await;
        });
    }
}
