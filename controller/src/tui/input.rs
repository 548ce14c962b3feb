//! The live console's keys: a key press to an [`Action`] (pure; the console thread acts on it).

use super::state::Action;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks for; `stopping` says a stop was already asked (a second Ctrl-C leaves at once).
pub fn action(key: &KeyEvent, stopping: bool) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        // Raw mode turns Ctrl-C into a key: it must still stop the run, as the signal does.
        KeyCode::Char('c') if ctrl => {
            if stopping {
                Action::ForceQuit
            } else {
                Action::Stop
            }
        }
        // Other control and alt chords are not ours (a NUL byte reads as Ctrl-Space).
        _ if ctrl || key.modifiers.contains(KeyModifiers::ALT) => return None,
        KeyCode::Char('q' | 'Q') => Action::Stop,
        KeyCode::Char('p' | 'P' | ' ') => Action::TogglePause,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            action(&key(KeyCode::Char('q'), none), false),
            Some(Action::Stop)
        );
        assert_eq!(
            action(&key(KeyCode::Char('p'), none), false),
            Some(Action::TogglePause)
        );
        assert_eq!(
            action(&key(KeyCode::PageDown, none), false),
            Some(Action::PageDown)
        );
        assert_eq!(action(&key(KeyCode::Up, none), false), Some(Action::Up));
        assert_eq!(action(&key(KeyCode::Char('x'), none), false), None);
        assert_eq!(
            action(&key(KeyCode::Char(' '), KeyModifiers::CONTROL), false),
            None,
            "a NUL byte is not a pause"
        );
        let ctrl_c = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(&ctrl_c, false), Some(Action::Stop));
        assert_eq!(action(&ctrl_c, true), Some(Action::ForceQuit));
        // q while stopping stays a (repeated, harmless) stop: only Ctrl-C forces.
        assert_eq!(
            action(&key(KeyCode::Char('q'), none), true),
            Some(Action::Stop)
        );
    }
}
