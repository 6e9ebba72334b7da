"""The product catalog the course trains on, from either source, cleaned and split.

    schema      the 17 columns of the real price list (names, order, dtypes)
    rendering   product pictures drawn from visible attributes, and their vocabularies
    catalog     the generated sample catalog: pricing, noise floor, traps, files on disk
    burberry    the real price list from the hub, and a robust parallel picture downloader
    images      decode checks and safe conversion to RGB
    cleaning    one stated reason per dropped row, the split by product group, datasets
    sources     either catalog behind one interface, as a profile chooses it
    plots       figures for the notebooks
"""
