"""Which version takes over: the champion/challenger gate, and the claim that elects one retrainer among cycles."""
