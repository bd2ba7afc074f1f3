"""The synthetic-world simulator behind `knockoff generate`: market, sellers and rings,
listings and fakes, labels and officers, writing. Not imported by features/, training/ or
serving/."""
