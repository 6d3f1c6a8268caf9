"""coding and math prompts in benchmark shapes, written for this project."""

CODING = [
    # function signatures with docstrings: "complete this function"
    '''def run_length_encode(s: str) -> str:
    """Compress a string by replacing runs of the same character with the character
    followed by the run length. Single characters keep no count.
    >>> run_length_encode("aaabccdddd")
    'a3bc2d4'
    >>> run_length_encode("")
    ''
    """''',
    '''def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Given closed intervals in any order, merge every pair that overlaps or touches
    and return the result sorted by start.
    >>> merge_intervals([(5, 7), (1, 3), (2, 4)])
    [(1, 4), (5, 7)]
    """''',
    '''from typing import List


def second_largest(values: List[int]) -> int:
    """Return the second largest distinct value of the list, or -1 when there is none.
    >>> second_largest([4, 1, 4, 3])
    3
    >>> second_largest([7, 7])
    -1
    """''',
    '''def words_by_length(sentence):
    """You are given a sentence of words separated by spaces. Return a dictionary that
    maps each word length to the list of words of that length, in order of appearance.
    Example: words_by_length("to be or not") == {2: ["to", "be", "or"], 3: ["not"]}
    """''',
    '''def rotate_matrix(m):
    """Rotate a square matrix (a list of lists) 90 degrees clockwise and return the new
    matrix without modifying the input.
    rotate_matrix([[1, 2], [3, 4]]) -> [[3, 1], [4, 2]]
    """''',
    '''def balanced_tags(html: str) -> bool:
    """Check that every opening tag like <b> or <div> in the string is closed by the
    matching </b> or </div> in the right order. Self-closing tags such as <br/> are
    ignored.
    >>> balanced_tags("<div><b>x</b></div>")
    True
    >>> balanced_tags("<b><i>x</b></i>")
    False
    """''',
    '''def count_islands(grid: list[list[str]]) -> int:
    """grid holds '1' for land and '0' for water. Count groups of land cells connected
    horizontally or vertically.
    """''',
    '''def digital_root(n: int) -> int:
    """Repeatedly sum the decimal digits of a non-negative integer until a single digit
    remains.
    >>> digital_root(9875)
    2
    """''',
    '''def price_after_discounts(price: float, codes: list[str]) -> float:
    """Apply discount codes in order. "HALF" halves the price, "TENOFF" subtracts 10
    (never below zero) and any other code is ignored. Round the result to 2 decimals.
    """''',
    '''def longest_common_prefix(words):
    """Return the longest string that is a prefix of every word in the list.
    An empty list gives "".
    >>> longest_common_prefix(["flower", "flow", "flight"])
    'fl'
    """''',
    '''def next_bigger_permutation(n: int) -> int:
    """Return the smallest integer greater than n made of the same digits, or -1 if no
    such number exists.
    >>> next_bigger_permutation(534976)
    536479
    """''',
    '''def weekday_counts(dates: list[str]) -> dict[str, int]:
    """dates are ISO strings like "2024-03-15". Return how many fall on each weekday,
    keyed by the weekday's English name; weekdays with no date are left out.
    """''',
    '''def spiral_order(matrix):
    """
    Return the elements of an m x n matrix in clockwise spiral order, starting at the
    top-left corner.

    spiral_order([[1,2,3],[4,5,6],[7,8,9]]) == [1,2,3,6,9,8,7,4,5]
    """''',
    '''def is_valid_isbn10(code: str) -> bool:
    """An ISBN-10 has nine digits followed by a digit or 'X' (worth 10). It is valid
    when the sum of each digit times its position (1 to 10) is divisible by 11. Hyphens
    are ignored.
    """''',
    '''def chunk_text(text: str, width: int) -> list[str]:
    """Split text into lines of at most `width` characters without breaking words; a
    word longer than width gets a line of its own.
    """''',
    '''/**
 * Returns the number of distinct ways to climb a staircase of n steps when each move
 * climbs 1, 2 or 3 steps.
 * climbWays(4) === 7
 */
function climbWays(n) {''',
    '''/// Returns the indices of the two numbers in `nums` that add up to `target`,
/// or `None` when no pair does. Each input has at most one answer.
fn pair_with_sum(nums: &[i64], target: i64) -> Option<(usize, usize)> {''',
    '''// Package textstats: implement the function below.
// WordFrequencies returns the k most frequent lower-cased words in text, most frequent
// first, ties broken alphabetically.
func WordFrequencies(text string, k int) []string {''',
    '''/**
 * Given an array of daily temperatures, return an array where each element says how
 * many days you must wait for a warmer temperature (0 if never).
 * Example: [73,74,75,71,69,72,76,73] -> [1,1,4,2,1,1,0,0]
 */
public int[] daysUntilWarmer(int[] temps) {''',
    '''def evaluate_rpn(tokens: list[str]) -> int:
    """Evaluate an arithmetic expression in reverse Polish notation. Valid operators are
    +, -, * and / (integer division truncating toward zero).
    >>> evaluate_rpn(["2", "1", "+", "3", "*"])
    9
    """''',
    '''Complete the function:

def compress_ranges(nums):
    """Given a sorted list of distinct integers, summarize consecutive runs as "a-b".
    compress_ranges([0, 1, 2, 4, 5, 7]) == ["0-2", "4-5", "7"]
    """''',
    '''Write the body of this function and add two doctests of your own:

def mask_email(address: str) -> str:
    """Keep the first and last character of the local part and replace the rest with
    '*', e.g. 'jonathan@example.com' -> 'j******n@example.com'."""''',
    # "what does this program print" / debugging
    '''What is printed when this Python program runs?

```python
items = [1, 2, 3]
copy = items
copy.append(4)
print(len(items), items is copy)
```''',
    '''```
x = 5
def bump():
    x += 1
    return x
print(bump())
```
What happens when this code is run, and why?''',
    '''What is the value of `total` at the end of this loop?

```python
total = 0
for i in range(1, 10, 3):
    if i % 2:
        total += i
    else:
        total -= 1
```''',
    '''This JavaScript logs something unexpected. What does it print and why?

```js
for (var i = 0; i < 3; i++) {
  setTimeout(() => console.log(i), 0);
}
```''',
    '''```python
d = {}
for word in "the cat the hat".split():
    d[word] = d.get(word, 0) + 1
print(sorted(d.items(), key=lambda kv: -kv[1])[0])
```
What is the output of this program?''',
    '''Why does this Rust code not compile, and how do I fix it?

```rust
let s = String::from("hi");
let t = s;
println!("{}", s);
```''',
    '''I get "IndexError: list index out of range" from this. Where is the bug?

```python
def last_three(xs):
    return [xs[i] for i in range(len(xs) - 3, len(xs) + 1)]
```''',
    '''What does `print([n * n for n in range(5) if n % 2 == 0][-1])` output?''',
    # whole-program requests
    "Write a Python script that finds duplicate files under a folder by hashing their contents.",
    "Implement an LRU cache class in Java with get and put in O(1).",
    "Write a function in C that reverses a singly linked list in place, and show how you would test it.",
    "Write a SQL query that returns, for each department, the employee with the highest salary (ties included).",
    "Write a CSS grid layout for a photo gallery that shows four columns on desktop and one on phones.",
    "Implement binary search in Go over a sorted slice of ints and return the index or -1.",
    "Write a bash one-liner that counts the unique IP addresses in an nginx access log.",
    "Implement Dijkstra's algorithm in Python for a graph given as an adjacency dictionary.",
    "Write a regular expression that matches US ZIP codes in both 12345 and 12345-6789 form, and explain each part.",
    "Write a TypeScript function that debounces another function by a given number of milliseconds.",
    ("follow", "Write a Python function that returns the n-th Catalan number.", "Now make it avoid recursion and big intermediate values."),
    ("follow", "Write a function to check whether a string is a valid IPv4 address.", "Rewrite it in Rust with unit tests."),
    ("follow", "Implement a stack using two queues in Python.", "What is the time complexity of each operation in your version?"),
    ("follow", "Write a C++ program that reads words from stdin and prints the most common one.", "Can you make it work for input that does not fit in memory?"),
]

MATH_MC = [
    ("abstract algebra", "Find the order of the element 3 in the multiplicative group of integers modulo 7.", ["2", "3", "6", "7"]),
    ("abstract algebra", "How many elements does the symmetric group S_4 have?", ["4", "12", "16", "24"]),
    ("abstract algebra", "Statement 1 | Every cyclic group is abelian. Statement 2 | Every abelian group is cyclic.",
     ["True, True", "True, False", "False, True", "False, False"]),
    ("abstract algebra", "What is the degree of the field extension Q(cube root of 5) over Q?", ["1", "2", "3", "6"]),
    ("college mathematics", "What is the determinant of the matrix [[2, 1], [5, 3]]?", ["1", "-1", "11", "6"]),
    ("college mathematics", "The series sum of 1/n^p converges exactly when", ["p > 0", "p >= 1", "p > 1", "p < 1"]),
    ("college mathematics", "How many real roots does x^3 - 3x + 1 = 0 have?", ["0", "1", "2", "3"]),
    ("elementary mathematics", "A shirt costs $40 after a 20% discount. What was the original price?", ["$48", "$50", "$52", "$60"]),
    ("elementary mathematics", "Which number is a multiple of both 6 and 8?", ["16", "24", "30", "36"]),
    ("elementary mathematics", "What is 3/4 divided by 3/8?", ["1/2", "2", "9/32", "3/2"]),
    ("high school mathematics", "If log base 2 of x equals 5, then x equals", ["10", "25", "32", "52"]),
    ("high school mathematics", "The sum of the interior angles of a hexagon is", ["540 degrees", "720 degrees", "900 degrees", "1080 degrees"]),
    ("high school mathematics", "For what value of k does the line y = kx + 2 pass through (3, 11)?", ["2", "3", "4", "9"]),
    ("statistics", "A fair coin is tossed 4 times. What is the probability of exactly two heads?", ["1/4", "3/8", "1/2", "5/8"]),
    ("statistics", "Which measure of center is most resistant to outliers?", ["Mean", "Median", "Range", "Standard deviation"]),
    ("statistics", "A 95% confidence interval for a mean is (12.1, 15.7). The margin of error is", ["1.8", "3.6", "13.9", "0.95"]),
]

MATH = [
    # grade-school word problems
    "Maya buys 3 notebooks at $2.50 each and a pen for $1.75. She pays with a $20 bill. How much change does she get?",
    "A bakery makes 240 muffins. It sells 3/8 of them in the morning and half of the rest in the afternoon. How many are left?",
    "Tom reads 12 pages on Monday and each day after that reads 4 more pages than the day before. How many pages has he read by the end of Friday?",
    "A train leaves at 9:40 and arrives at 13:05. How long is the trip in minutes?",
    "Lena earns $18 an hour and works 6 hours on weekdays and 4 hours on Saturday. How much does she earn in a week?",
    "A farmer has chickens and cows, 30 heads and 84 legs in total. How many cows are there?",
    "Three friends share a pizza bill of $47.40 and add a 15% tip, split equally. How much does each pay?",
    "A tank fills in 6 hours with one pipe and 3 hours with another. How long with both pipes open?",
    "James is twice as old as his sister. In 5 years the sum of their ages will be 34. How old is James now?",
    "A recipe for 4 people uses 300 g of flour. How much flour for 10 people?",
    "A car uses 6.5 liters of fuel per 100 km. Fuel costs 1.80 per liter. What does a 420 km trip cost?",
    "The price of a phone rose by 10% and then fell by 10%. Is it back to the original price? Show the calculation.",
    "a shop sells pencils in packs of 12 for $3 or singly for 30 cents. what is the cheapest way to buy 30 pencils",
    # competition style
    "How many positive integers less than 1000 are divisible by 7 but not by 11?",
    "Find all real x such that sqrt(x + 7) - sqrt(x) = 1.",
    "What is the remainder when 3^100 is divided by 13?",
    "Let a, b, c be positive reals with a + b + c = 3. Prove that ab + bc + ca <= 3.",
    "How many ways can 8 rooks be placed on a chessboard so that no two attack each other?",
    "Find the sum of all positive divisors of 360.",
    "The sequence a_1 = 2, a_(n+1) = a_n^2 - a_n + 1. Show that the terms are pairwise coprime.",
    "A point is chosen uniformly at random inside a square of side 2. What is the probability that it lies within distance 1 of the center?",
    "Find the number of ordered pairs of integers (x, y) with x^2 + y^2 = 25.",
    "Prove that for every positive integer n, n^5 - n is divisible by 30.",
    "Let f be a function with f(x) + 2f(1/x) = 3x for x != 0. Find f(2).",
    "In triangle ABC, AB = 13, BC = 14 and CA = 15. Find the length of the altitude from A.",
    "What is the last digit of 7^2024?",
    "Evaluate the integral of x e^(2x) from 0 to 1.",
    "Find the minimum value of x^2 + 4/x^2 for real nonzero x.",
    # MathQA-style option lists
    "a sum of money doubles itself at simple interest in 8 years . in how many years will it triple ? a ) 12 , b ) 14 , c ) 16 , d ) 18 , e ) 24",
    "the average of five numbers is 24 . if one number is removed the average becomes 22 . what number was removed ? a ) 28 , b ) 30 , c ) 32 , d ) 34 , e ) 36",
    "a man walks at 5 km / hr and reaches his office 6 minutes late . at 6 km / hr he is 4 minutes early . find the distance . a ) 4 km , b ) 5 km , c ) 6 km , d ) 7 km , e ) 8 km",
    "if the ratio of two numbers is 3 : 5 and their lcm is 150 , find the smaller number . a ) 10 , b ) 20 , c ) 30 , d ) 40 , e ) 50",
    "a trader marks his goods 25 % above cost and gives a 12 % discount . what is his profit percent ? a ) 8 % , b ) 10 % , c ) 12 % , d ) 13 % , e ) 15 %",
    ("follow", "Solve 2x^2 - 7x + 3 = 0.", "Now sketch how the graph of the quadratic looks and where its vertex is."),
    ("follow", "What is the probability of drawing two aces from a deck without replacement?", "And with replacement?"),
    ("follow", "How many diagonals does a convex 12-gon have?", "And how many triangles can be formed from its vertices?"),
]

ITEMS = {
    "coding": CODING,
    "math": [("mc", s, q, o) for s, q, o in MATH_MC] + MATH,
}
