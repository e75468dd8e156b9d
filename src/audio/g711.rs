//! G.711 mu-law, table-driven and bit-exact with the ITU/Sun reference (and Python's audioop).
//!
//! Decoding is one lookup in a 256-entry table; encoding one lookup in a 16384-entry table indexed
//! by the sample's top 14 bits (mu-law only ever looks at those). Both tables are built at compile time.

/// 20 ms of 8 kHz audio: the Media Streams frame.
pub const FRAME_8K: usize = 160;

const BIAS: i32 = 0x84;
const CLIP: i32 = 8159;

const fn decode_one(code: u8) -> i16 {
    let u = !code;
    let t = (((u & 0x0F) as i32) << 3) + BIAS;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

/// Encodes a 14-bit sample (the 16-bit sample shifted right by 2).
const fn encode_14(sample: i32) -> u8 {
    let (mut value, mask) = if sample < 0 { (-sample, 0x7F) } else { (sample, 0xFF) };
    if value > CLIP {
        value = CLIP;
    }
    value += BIAS >> 2;
    let mut segment = 0;
    let mut end = 0x3F;
    while segment < 8 && value > end {
        segment += 1;
        end = (end << 1) | 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    ((segment << 4) as u8 | ((value >> (segment + 1)) & 0x0F) as u8) ^ mask
}

static DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_one(i as u8);
        i += 1;
    }
    table
};

static ENCODE: [u8; 16384] = {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        // Index i holds the 14-bit pattern of (sample >> 2): sign-extend it back.
        let sample = if i >= 8192 { i as i32 - 16384 } else { i as i32 };
        table[i] = encode_14(sample);
        i += 1;
    }
    table
};

#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

#[inline]
pub fn encode(sample: i16) -> u8 {
    ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

pub fn decode_into(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = decode(c);
    }
}

pub fn encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = encode(s);
    }
}

/// mu-law's code for silence.
pub const SILENCE: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs Python's audioop (the reference the issue names) on `input`.
    fn audioop(function: &str, input: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inp, out) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&inp, input).expect("write");
        let script = format!(
            "import audioop,sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(audioop.{function}(d, 2))"
        );
        let status = Command::new("python3")
            .args(["-W", "ignore", "-c", &script])
            .arg(&inp)
            .arg(&out)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 audioop.{function} failed");
        std::fs::read(out).expect("read")
    }

    #[test]
    fn decoding_matches_audioop_for_all_256_codes() {
        let codes: Vec<u8> = (0..=255).collect();
        let reference = audioop("ulaw2lin", &codes);
        let ours: Vec<u8> = codes.iter().flat_map(|&c| decode(c).to_le_bytes()).collect();
        assert_eq!(ours, reference);
    }

    #[test]
    fn encoding_matches_audioop_for_all_65536_samples() {
        let samples: Vec<u8> = (i16::MIN..=i16::MAX).flat_map(i16::to_le_bytes).collect();
        let reference = audioop("lin2ulaw", &samples);
        let ours: Vec<u8> = (i16::MIN..=i16::MAX).map(encode).collect();
        assert_eq!(ours.len(), 65536);
        let first_difference = ours.iter().zip(&reference).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "first differing sample index");
    }

    #[test]
    fn silence_and_round_trips() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(decode(SILENCE), 0);
        for code in 0..=255u8 {
            // Every code decodes to a value that encodes back to it (0x7F, -0, aside).
            if code != 0x7F {
                assert_eq!(encode(decode(code)), code, "code {code:#x}");
            }
        }
    }
}
