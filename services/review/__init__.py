"""The review service: ratings and reviews, moderation, helpful votes, rating analytics."""
