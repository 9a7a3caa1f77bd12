//! Styles of the dashboard. Colour only ever repeats what a word and a
//! symbol already say (DESIGN.md §1): without colour (NO_COLOR) every
//! style keeps its modifiers — bold, reversed, underlined — and nothing
//! else, and the screen means the same.

use ratatui::style::{Color, Modifier, Style};

/// `--theme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThemeName {
    #[default]
    Default,
    /// White on black, bright and bold states, for low vision and glare.
    HighContrast,
}

/// What a state means to an operator; its style follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Good,
    Bad,
    Warn,
    Neutral,
    /// The active path, the selected tab.
    Active,
}

/// The styles in use, decided once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    name: ThemeName,
    color: bool,
}

impl Theme {
    /// `color: false` for NO_COLOR: the caller reads the environment.
    pub fn new(name: ThemeName, color: bool) -> Self {
        Theme { name, color }
    }

    fn paint(&self, style: Style, default: Color, high: Color) -> Style {
        if !self.color {
            return style;
        }
        match self.name {
            ThemeName::Default => style.fg(default),
            ThemeName::HighContrast => style.fg(high),
        }
    }

    /// The whole screen.
    pub(crate) fn base(&self) -> Style {
        match (self.color, self.name) {
            (true, ThemeName::HighContrast) => Style::new().fg(Color::White).bg(Color::Black),
            _ => Style::new(),
        }
    }

    pub(crate) fn tone(&self, tone: Tone) -> Style {
        let strong = Style::new().add_modifier(Modifier::BOLD);
        match tone {
            Tone::Good => self.paint(Style::new(), Color::Green, Color::LightGreen),
            Tone::Bad => self.paint(strong, Color::Red, Color::LightRed),
            Tone::Warn => self.paint(strong, Color::Yellow, Color::LightYellow),
            Tone::Neutral => Style::new(),
            Tone::Active => self.paint(strong, Color::Cyan, Color::LightCyan),
        }
    }

    pub(crate) fn header(&self) -> Style {
        let style = Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
        self.paint(style, Color::Reset, Color::White)
    }

    /// The selected row or tab: reversed, so it shows without colour too.
    pub(crate) fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// What the role does not allow; the reason is written beside it.
    pub(crate) fn disabled(&self) -> Style {
        let style = Style::new().add_modifier(Modifier::DIM | Modifier::CROSSED_OUT);
        self.paint(style, Color::DarkGray, Color::Gray)
    }

    pub(crate) fn border(&self) -> Style {
        self.paint(Style::new(), Color::Gray, Color::White)
    }

    pub(crate) fn key(&self) -> Style {
        self.paint(
            Style::new().add_modifier(Modifier::BOLD),
            Color::Cyan,
            Color::LightYellow,
        )
    }
}
