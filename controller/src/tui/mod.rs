//! The live console (ratatui + crossterm): a thread of its own owns the terminal, takes the
//! orchestrator's events from a bounded queue (the sender never waits: a full queue is counted
//! and shown), applies them to its [`state::LiveState`] and redraws at a steady [`FRAME`] rate;
//! keys stop, pause and scroll. The terminal is restored on every way out: the end of the run,
//! an error (a Drop guard), a panic anywhere (a panic hook), a forced quit.
//!
//! Split as tokio-console does: `state` (events in, nothing drawn), `view` (pure render
//! functions), `input` (keys to actions); this module is the thread and the terminal.

pub mod input;
pub mod spark;
pub mod state;
pub mod view;

pub use state::{Event, MonitorSnapshot};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::event::{self as term_event, Event as TermEvent};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::layout::Rect;
use state::{Action, LiveState};
use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Time between frames (10 Hz).
pub const FRAME: Duration = Duration::from_millis(100);
/// Events waiting for the console thread; more are dropped and counted.
/// (A 10,000-request burst ends within a few frames; its rows should fit.)
const QUEUE_EVENTS: usize = 32_768;
/// Log output held while the console owns the screen, printed when it closes.
const HELD_MAX_BYTES: usize = 256 * 1024;

/// True while the terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// What was written to stderr (logs) while the console was on screen.
static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<u8>> {
    // A byte buffer cannot be left half-changed: poison is moot.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives the terminal back (main screen, cooked mode, cursor shown) if the console has it, and
/// prints the log lines held meanwhile. Idempotent; safe from a panic hook or before `exit`.
pub fn restore_terminal() {
    let mut held = held();
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let mut out = io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, Show);
        let _ = out.flush();
        if !held.is_empty() {
            let _ = io::stderr().write_all(&held);
            held.clear();
        }
    }
}

/// The log writer for `tracing`: stderr, except while the live console owns the screen, when
/// lines are held (up to 256 KiB) and printed once it closes, so they neither tear the frame
/// nor get lost.
pub struct ConsoleStderr;

impl Write for ConsoleStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut held = held();
        if ACTIVE.load(Ordering::SeqCst) {
            if held.len() + buf.len() <= HELD_MAX_BYTES {
                held.extend_from_slice(buf);
            }
            Ok(buf.len())
        } else {
            drop(held);
            io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must land on a usable terminal, not the alternate screen.
            restore_terminal();
            previous(info);
        }));
    });
}

/// Owns the terminal while the console is on screen; dropping it restores the terminal.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The orchestrator's handle on the console thread.
pub struct LiveConsole {
    tx: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
    close: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl LiveConsole {
    /// Takes over the terminal and starts the console thread. `stop` is cancelled by `q` (and by
    /// Ctrl-C, which raw mode turns into a key): the same graceful stop as the signal.
    /// `preamble` lines go to the message area.
    pub fn start(stop: CancellationToken, preamble: Vec<String>) -> io::Result<Self> {
        let guard = TerminalGuard::enter()?;
        let (tx, rx) = sync_channel(QUEUE_EVENTS);
        let dropped = Arc::new(AtomicU64::new(0));
        let close = Arc::new(AtomicBool::new(false));
        let (d, c) = (dropped.clone(), close.clone());
        let thread = std::thread::Builder::new()
            .name("tokengun-console".into())
            .spawn(move || ui_loop(guard, &rx, &c, &d, &stop, preamble))?;
        Ok(Self {
            tx,
            dropped,
            close,
            thread: Some(thread),
        })
    }

    /// Hands an event to the console without waiting; false once the console thread is gone.
    pub fn send(&self, event: Event) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Closes the console and gives the terminal back; says why the thread ended early, if it did.
    pub fn close(mut self) -> Option<String> {
        self.shut()
    }

    fn shut(&mut self) -> Option<String> {
        self.close.store(true, Ordering::SeqCst);
        let outcome = self.thread.take().map(JoinHandle::join);
        restore_terminal();
        match outcome {
            Some(Ok(Err(e))) => Some(format!("the live console failed: {e}")),
            Some(Err(_)) => Some("the live console panicked".into()),
            _ => None,
        }
    }
}

impl Drop for LiveConsole {
    fn drop(&mut self) {
        self.shut();
    }
}

fn ui_loop(
    mut guard: TerminalGuard,
    rx: &Receiver<Event>,
    close: &AtomicBool,
    dropped: &AtomicU64,
    stop: &CancellationToken,
    preamble: Vec<String>,
) -> io::Result<()> {
    let mut state = LiveState::new();
    for line in preamble {
        state.apply(Event::Message(line), Instant::now());
    }
    let mut next_frame = Instant::now();
    loop {
        // Keys until the next frame is due.
        while term_event::poll(next_frame.saturating_duration_since(Instant::now()))? {
            let TermEvent::Key(key) = term_event::read()? else {
                continue; // a resize is picked up by the next draw
            };
            match input::action(&key, state.stopping) {
                Some(Action::Stop) if !state.stopping => {
                    stop.cancel();
                    state.apply(Event::Stopping, Instant::now());
                }
                Some(Action::Stop) => {} // already stopping
                Some(Action::ForceQuit) => {
                    restore_terminal();
                    eprintln!(
                        "\ninterrupted twice: exiting without waiting for in-flight requests"
                    );
                    std::process::exit(i32::from(crate::EXIT_INTERRUPTED));
                }
                Some(a) => state.act(a, Instant::now()),
                None => {}
            }
        }
        // Everything that happened since the last frame: cheap state updates only.
        loop {
            match rx.try_recv() {
                Ok(e) => state.apply(e, Instant::now()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }
        // Closed, or a panic elsewhere took the terminal back: draw no more.
        if close.load(Ordering::SeqCst) || !ACTIVE.load(Ordering::SeqCst) {
            return Ok(());
        }
        state.events_dropped = dropped.load(Ordering::Relaxed);
        let size = guard.terminal.size()?;
        state.viewport_rows =
            view::table_viewport(Rect::new(0, 0, size.width, size.height), &state);
        let now = Instant::now();
        guard.terminal.draw(|f| view::render(f, &state, now))?;
        next_frame += FRAME;
        let now = Instant::now();
        if next_frame < now {
            next_frame = now + FRAME; // a slow frame: keep the pace, do not catch up
        }
    }
}
