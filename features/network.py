"""The seller network over a whole batch: accounts per shared contact hash
(`contact_accounts`) and connected components of sellers linked by shared contact hashes or
shared main images (`seller_cluster_size`, with scipy). Images shared by more than the state's
`max_image_sellers` sellers (official brand photos) do not link."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def seller_network(
    base: pl.LazyFrame, sellers: pl.DataFrame, images: pl.DataFrame, max_image_sellers: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(contacts, clusters) of a batch. `base` has a row per listing with seller_id and
    `_image_key`; `sellers` has seller_id and `_contacts` (its distinct contact hashes);
    `images` has `_image_key` and main_image_sellers.

    contacts: seller_contact_hash, contact_accounts (hashes of two or more accounts only);
    clusters: seller_id, seller_cluster_size (sellers with a link only)."""
    contact_edges = (
        sellers.select("seller_id", pl.col("_contacts").alias("node")).explode("node")
        .drop_nulls()
    )
    contacts = (
        contact_edges.group_by("node").agg(pl.len().alias("contact_accounts"))
        .filter(pl.col("contact_accounts") > 1)
        .select(pl.col("node").alias("seller_contact_hash"), "contact_accounts")
    )
    linking_images = images.filter(
        pl.col("main_image_sellers").is_between(2, max_image_sellers)
    ).select("_image_key")
    image_edges = (
        base.select("seller_id", "_image_key")
        .join(linking_images.lazy(), on="_image_key", how="semi")
        .unique()
        .select("seller_id", pl.col("_image_key").cast(pl.String).alias("node"))
        .collect(engine="streaming")
    )
    clusters = seller_clusters(
        pl.concat([
            contact_edges.with_columns(pl.lit("c").alias("kind")),
            image_edges.with_columns(pl.lit("i").alias("kind")),
        ])
    )
    return contacts, clusters


def seller_clusters(edges: pl.DataFrame) -> pl.DataFrame:
    """Connected components of sellers linked through shared nodes (contact or image hashes).

    `edges` has seller_id, node, kind; returns seller_id, seller_cluster_size (sellers in the
    component). Sellers with no edges are absent (cluster of one)."""
    schema = {"seller_id": pl.String, "seller_cluster_size": pl.Int64}
    if edges.is_empty():
        return pl.DataFrame(schema=schema)
    edges = edges.with_columns(
        (pl.col("seller_id").rank("dense") - 1).cast(pl.Int64).alias("_s"),
        (pl.concat_str("kind", "node").rank("dense") - 1).cast(pl.Int64).alias("_n"),
    )
    n_sellers = int(edges["_s"].max()) + 1
    n_nodes = n_sellers + int(edges["_n"].max()) + 1
    rows = edges["_s"].to_numpy()
    cols = edges["_n"].to_numpy() + n_sellers
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    seller_label = pl.DataFrame({"_s": np.arange(n_sellers), "_c": labels[:n_sellers]})
    seller_label = seller_label.with_columns(
        pl.len().over("_c").cast(pl.Int64).alias("seller_cluster_size")
    )
    return (
        edges.select("seller_id", "_s").unique()
        .join(seller_label, on="_s")
        .select(list(schema))
    )
