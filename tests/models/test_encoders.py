"""The CNN encoder's convolution over docs laid end to end: each doc's
output is its own, and the convolution sees few distinct input shapes
however many batch lengths it meets (oneDNN keeps a kernel per shape)."""
import torch

from spacy_pytorch_shim.models.encoders import CNNEncoder, bucketed_length


def test_bucketed_lengths_pad_little_and_are_few():
    lengths = range(1, 200_001)
    buckets = [bucketed_length(n) for n in lengths]
    assert all(b >= n for b, n in zip(buckets, lengths))
    assert all(b - n < max(64, n / 16) for b, n in zip(buckets, lengths))
    assert len(set(buckets)) < 16 * 12


def test_cnn_sees_few_shapes_and_each_doc_gets_its_own_output():
    torch.manual_seed(0)
    encoder = CNNEncoder(width=8, depth=2, window=1, dropout=0.0).eval()
    shapes = set()
    encoder.convs[0].register_forward_hook(lambda module, args, out: shapes.add(tuple(args[0].shape)))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n_docs in range(1, 121):
            lengths = torch.randint(1, 30, (n_docs,), generator=generator)
            X = torch.randn(int(lengths.sum()), 8, generator=generator)
            Y = encoder(X, lengths)
            if n_docs % 40 == 0:
                for doc, y in zip(torch.split(X, lengths.tolist()), torch.split(Y, lengths.tolist())):
                    torch.testing.assert_close(y, encoder(doc, torch.tensor([len(doc)])), atol=1e-5, rtol=1e-5)
    assert len(shapes) <= 40, f"{len(shapes)} input shapes for 120 batches"
