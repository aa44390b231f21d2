//! The tray's icon: a 32×32 key, drawn here, in the colour of the menu's tone.

use tray_icon::Icon;

use super::menu::Tone;

const ICON_SIZE: u32 = 32;

/// A 32×32 key, drawn here: a ring (the bow) and a shaft with two teeth, in the tone's colour.
pub fn icon(tone: Tone) -> Icon {
    let rgba = icon_rgba(tone);
    // Only fails for a buffer that does not match the size, which icon_rgba never makes.
    Icon::from_rgba(rgba, ICON_SIZE, ICON_SIZE).unwrap_or_else(|_| Icon::from_rgba(vec![0; 4], 1, 1).expect("1x1 icon"))
}

fn icon_rgba(tone: Tone) -> Vec<u8> {
    let (r, g, b) = match tone {
        Tone::Ok => (0x2e, 0xa0, 0x43),
        Tone::Warning => (0xe8, 0xa2, 0x00),
        Tone::Error => (0xd3, 0x2f, 0x2f),
        Tone::Offline => (0x9a, 0x9a, 0x9a),
    };
    let n = ICON_SIZE as usize;
    let mut px = vec![0u8; n * n * 4];
    for y in 0..n {
        for x in 0..n {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            // Bow: a ring centred at (10, 16), outer radius 8.5, hole radius 3.5.
            let d = ((fx - 10.0).powi(2) + (fy - 16.0).powi(2)).sqrt();
            let ring = (8.5 - d + 0.5).clamp(0.0, 1.0) * (d - 3.5 + 0.5).clamp(0.0, 1.0);
            // Shaft from the ring to x = 30, y 14..18; teeth below it at x 22..25 and 26..30.
            let shaft = (17.0..30.0).contains(&fx) && (14.0..18.0).contains(&fy);
            let tooth = ((22.0..25.0).contains(&fx) || (27.0..30.0).contains(&fx)) && (18.0..23.0).contains(&fy);
            let a = if shaft || tooth { 1.0 } else { ring };
            if a > 0.0 {
                let i = (y * n + x) * 4;
                px[i..i + 4].copy_from_slice(&[r, g, b, (a * 255.0).round() as u8]);
            }
        }
    }
    px
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_differ_by_tone_and_have_a_shape() {
        let ok = icon_rgba(Tone::Ok);
        assert_eq!(ok.len(), 32 * 32 * 4);
        let opaque = ok.chunks(4).filter(|p| p[3] == 255).count();
        assert!((150..700).contains(&opaque), "{opaque} opaque pixels");
        // The ring's hole and the corners are transparent.
        assert_eq!(ok[(16 * 32 + 10) * 4 + 3], 0);
        assert_eq!(ok[3], 0);
        assert_ne!(ok, icon_rgba(Tone::Warning));
        assert_ne!(icon_rgba(Tone::Error), icon_rgba(Tone::Offline));
    }
}
