//! Where a writer stands in a response given in pieces (`Response::Pieces`): the plaintext
//! writer (vectored `sendmsg`) and the TLS writer (vectored into rustls) both send a prefix of
//! what is left and move on by what went out.

use bytes::Bytes;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PieceCursor {
    /// The piece being written.
    piece: usize,
    /// Bytes of it already written.
    offset: usize,
}

impl PieceCursor {
    /// The first piece with bytes left to write and how far into it the writer is, or None
    /// when everything was written (empty pieces are passed over).
    pub fn next_unwritten(&mut self, pieces: &[Bytes]) -> Option<(usize, usize)> {
        while self.piece < pieces.len() && self.offset == pieces[self.piece].len() {
            self.piece += 1;
            self.offset = 0;
        }
        (self.piece < pieces.len()).then_some((self.piece, self.offset))
    }

    /// Moves on by `n` written bytes (across pieces).
    pub fn advance(&mut self, pieces: &[Bytes], mut n: usize) {
        while n > 0 && self.piece < pieces.len() {
            let left = pieces[self.piece].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.piece += 1;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PieceCursor;
    use bytes::Bytes;

    #[test]
    fn the_cursor_moves_across_pieces_and_passes_over_empty_ones() {
        let pieces = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"f"),
        ];
        let mut at = PieceCursor::default();
        assert_eq!(at.next_unwritten(&pieces), Some((0, 0)));
        at.advance(&pieces, 2);
        assert_eq!(at.next_unwritten(&pieces), Some((0, 2)));
        at.advance(&pieces, 2);
        assert_eq!(
            at.next_unwritten(&pieces),
            Some((2, 1)),
            "the empty piece is passed over"
        );
        at.advance(&pieces, 2);
        assert_eq!(at.next_unwritten(&pieces), None);
        at.advance(&pieces, 5);
        assert_eq!(at.next_unwritten(&pieces), None, "nothing past the end");
    }
}
